"""Meta-World MT10 behind the tabletop's observation/action interface (optional extra ``mmvla[metaworld]``).

See :mod:`mmvla.sim.metaworld.env`. Nothing is imported here; Meta-World itself is imported only when an
environment is built.
"""
