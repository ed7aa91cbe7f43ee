"""edgelam/SpecDecode-v0: draft length and draft model per speculative-decoding round over a fading link."""
