// Package receipts is a stub to be filled in.
package receipts

// Engine is the receipts engine.
type Engine struct{}
