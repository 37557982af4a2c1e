package bridgetest

// RaceSlowdown is raceSlowdown, for the tests.
const RaceSlowdown = raceSlowdown
