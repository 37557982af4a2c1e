//go:build linux

package bridge

import "golang.org/x/sys/unix"

// hideEnvironment makes this process not dumpable: another process of the
// same user, such as an exec handler's command, can then neither read its
// /proc entries (environ holds TASKMANAGER_API_KEY and Temporal's
// credentials) nor attach to it. Root still can.
func hideEnvironment() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
