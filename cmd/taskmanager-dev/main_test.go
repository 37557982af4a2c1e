package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFlags_listen_on_loopback_by_default(t *testing.T) {
	t.Setenv("TASKMANAGER_API_KEY", "")
	c, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8000", c.addr)
	require.True(t, loopback(c.addr))

	c, err = parseFlags([]string{"--addr", "0.0.0.0:8000"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:8000", c.addr, "an explicit --addr chooses another interface")
	require.False(t, loopback(c.addr))

	_, err = parseFlags([]string{"--style", "yaml"}, io.Discard)
	require.ErrorContains(t, err, "--style must be documented or php")
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8000": true, "localhost:8000": true, "[::1]:8000": true, "127.0.0.2:1": true,
		"0.0.0.0:8000": false, ":8000": false, "[::]:8000": false, "10.0.0.1:8000": false, "tm.example:8000": false, "nonsense": false,
	} {
		require.Equal(t, want, loopback(addr), addr)
	}
}
