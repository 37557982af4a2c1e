package bridge

import (
	"log/slog"
	"sync/atomic"
)

// trouble logs a failure that repeats (a listing that fails every poll
// interval) at Warn once when it starts, at Debug while it lasts, and at
// Info once when it ends: the log says it without filling up.
type trouble struct{ on atomic.Bool }

// failed logs one failure.
func (t *trouble) failed(log *slog.Logger, msg string, args ...any) {
	if t.on.CompareAndSwap(false, true) {
		log.Warn(msg+" (logged again at debug level until it works)", args...)
		return
	}
	log.Debug(msg, args...)
}

// ok logs msg if failures were logged since the last success.
func (t *trouble) ok(log *slog.Logger, msg string) {
	if t.on.CompareAndSwap(true, false) {
		log.Info(msg)
	}
}
