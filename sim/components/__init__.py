"""The model's components (desmod's tree): population, arrivals, stations, the authorization path,
the market and the after-authorization processes. ``sim.world.World`` assembles them."""
