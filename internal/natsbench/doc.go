// Package natsbench measures the NATS subject designs Parley could use to
// route traffic between gateways: per-user subjects (parley.u.<user>), one
// subject per gateway (parley.node.<id>.>) and today's single broadcast
// subject (parley.bcast).
//
// The package holds only tests and benchmarks; it exports nothing and must not
// be imported. Every measurement runs against a real three-server NATS
// cluster started in-process, with clients connected over loopback TCP to
// specific servers. The numbers and the reasoning built on them are in
// docs/cluster-subjects.md.
package natsbench
