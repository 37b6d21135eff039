"""ccsim's simulation: a SimPy world that drives the domain services in virtual time."""
