"""The launch layer: whatever starts several services. `cli` (`specdec serve`, `specdec up`),
`stack` (one process per service on loopback), `inprocess` (all three in this process, for
tests), `ray_stack` (Ray actors), `demo`. Every launcher calls each service's
`server.start(config)`; no service imports another."""
