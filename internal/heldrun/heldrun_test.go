package heldrun

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A run's token is held until it is released, tokens are not reused, and
// Count follows.
func TestHold(t *testing.T) {
	before := Count()
	a, releaseA := Hold()
	b, releaseB := Hold()
	require.NotEqual(t, a, b)
	require.False(t, Released(a))
	require.Equal(t, before+2, Count())
	releaseA()
	require.True(t, Released(a))
	releaseA() // twice: counted once
	require.Equal(t, before+1, Count())
	require.False(t, Released(b))
	releaseB()
	require.True(t, Released(b))
	require.Equal(t, before, Count())
	require.True(t, Released(0), "no run holds token 0")
}
