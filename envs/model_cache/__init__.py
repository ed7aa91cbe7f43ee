"""EdgeModelCache-v0: the edge model toolbox of the edge-cloud BAIM framework (Tian et al.)."""
