"""The foundation every other part stands on: ``UserError`` (the one exception family for a
user's mistakes), safe file access (atomic writes, reads that never run code, the run lock), the
paths of a run folder (``layout``) and the one up-to-date rule (``provenance``). It imports
nothing heavier than numpy; it may import no other part of the package."""
