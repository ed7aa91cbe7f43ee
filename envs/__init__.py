"""edgelam environments; importing this package registers every env id with Gymnasium."""

from edgelam.envs.registration import ENV_IDS, PARALLEL_ENVS, register_all

register_all()

__all__ = ["ENV_IDS", "PARALLEL_ENVS"]
