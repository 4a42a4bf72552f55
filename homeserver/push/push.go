// Package push is a stub to be filled in.
package push

// Engine is the push engine.
type Engine struct{}
