// PolicyRoute: the pure half of `plexus-policy-route`, a Plexus finalizer that gives each secondary interface of a
// pod its own routing table and source rules, so replies leave by the interface the request came in on.
//
// - Config.swift: stdin (`PolicyRouteInput`) and the plugin options (`PolicyOptions`).
// - Addresses.swift: IP addresses and prefixes (`InetAddress`, `InetPrefix`).
// - Plan.swift: which interfaces qualify and what they get (`PolicyPlan`).
// - Netns.swift: the namespace interface the executable implements over netlink, and ADD/CHECK/DEL on a plan.
// - Plugin.swift: the verbs (`PolicyRoutePlugin.run`).
//
// No I/O and no Foundation: the executable (Sources/plexus-policy-route) wires the environment, stdin/stdout and
// netlink in.
