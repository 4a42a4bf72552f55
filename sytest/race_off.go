//go:build !race

package sytest

const raceEnabled = false
