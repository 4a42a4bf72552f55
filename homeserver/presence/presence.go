// Package presence is a stub to be filled in.
package presence

// Engine is the presence engine.
type Engine struct{}
