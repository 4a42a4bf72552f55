// Package typing is a stub to be filled in.
package typing

// Engine is the typing engine.
type Engine struct{}
