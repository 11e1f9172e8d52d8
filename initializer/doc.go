// Package initializer is the root of the module that holds the Initializer
// (the init container that attests a pod to the Coordinator) and the
// service-mesh proxy sidecar, with the mesh-annotation parser both the proxy
// and the webhook use.
package initializer
