// Package e2ee stores and routes what end-to-end encryption needs: device
// keys, one-time and fallback keys, cross-signing keys and signatures, key
// backups, to-device messages and device-list changes. The server never
// sees plaintext.
package e2ee

// Engine is the end-to-end encryption engine.
type Engine struct{}
