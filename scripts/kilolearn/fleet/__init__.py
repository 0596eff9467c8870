"""A fleet of boards learning together on Flower (federated learning; docs/fleet.md).

:mod:`.aggregate` the int8/float32 aggregation of the boards' blobs (bit-reproducible),
:mod:`.boards` one board's round (device session or numpy twin, faults, bytes),
:mod:`.flower` the Flower ClientApp, server strategy and engines, :mod:`.run` a run end to
end with its baselines, :mod:`.cli` ``kilolearn fleet``.
"""
