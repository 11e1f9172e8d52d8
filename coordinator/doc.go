// Package coordinator is the root of the Coordinator module: the attested
// service that holds the manifest, validates workload evidence against it and
// issues service-mesh certificates (DESIGN.md §5).
package coordinator
