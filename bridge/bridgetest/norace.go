//go:build !race

package bridgetest

// raceSlowdown: see race.go.
const raceSlowdown = 1
