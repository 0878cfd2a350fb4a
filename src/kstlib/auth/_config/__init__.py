"""The parts of :mod:`kstlib.auth.config` (its public face): value checks, the provider
config, the settings sections, section loading, and the provider builder."""
