"""edgelam environments; importing this package registers every env id with Gymnasium."""

from edgelam.envs.registration import ENV_IDS, GYM_ENVS, PARALLEL_ENVS, make_parallel, register_all

register_all()

__all__ = ["ENV_IDS", "GYM_ENVS", "PARALLEL_ENVS", "make_parallel"]
