//go:build race

package bridgetest

// raceSlowdown widens the deadlock detection under the race detector,
// which slows workflow code several times over (CEL's first compile, in a
// workflow task, takes a second there on a busy machine).
const raceSlowdown = 10
