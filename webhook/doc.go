// Package webhook is the root of the admission-webhook module: the mutating
// webhook that turns a plain pod into a confidential one, and the Kata agent
// policy generator shared with the CLI (DESIGN.md §6).
package webhook
