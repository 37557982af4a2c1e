package activities

// CannotRunForTest exposes cannotRun to the tests.
var CannotRunForTest = cannotRun
