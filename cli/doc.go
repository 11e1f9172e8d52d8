// Package cli is the root of the module that builds the `contrast` command
// line tool: generate, set, verify and recover.
package cli
