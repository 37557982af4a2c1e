package main

import (
	"flag"
	"io"
	"strings"
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

// The API key from the environment is the default, and never printed:
// the usage text (--help, and any flag error, into logs) showed it as the
// flag's default. (Found by a review.)
func TestFlags_api_key_from_the_environment_is_not_printed(t *testing.T) {
	t.Setenv("TASKMANAGER_API_KEY", "sekrit123")
	var out strings.Builder
	_, err := parseFlags([]string{"--help"}, &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.NotContains(t, out.String(), "sekrit123")
	_, err = parseFlags([]string{"--no-such-flag"}, &out)
	require.Error(t, err)
	require.NotContains(t, out.String(), "sekrit123")

	c, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "sekrit123", c.apiKey)
	c, err = parseFlags([]string{"--api-key="}, io.Discard)
	require.NoError(t, err)
	require.Empty(t, c.apiKey, "an explicit empty --api-key: none")
}

// Values the server would silently replace with its defaults, and stray
// arguments, are refused, naming the flag. (Found by a review.)
func TestFlags_out_of_range_values_and_stray_arguments_are_refused(t *testing.T) {
	for args, want := range map[string]string{
		"--claim-timeout -5s": "--claim-timeout must be 1s or more",
		"--claim-timeout 0s":  "--claim-timeout must be 1s or more",
		"--max-attempts -2":   "--max-attempts must be 1 or more",
		"--seed -3":           "--seed must be 0 or more",
		"--seed 2 extra-arg":  `unexpected argument "extra-arg"`,
	} {
		_, err := parseFlags(strings.Fields(args), io.Discard)
		require.ErrorContains(t, err, want, args)
	}
	_, err := parseFlags([]string{"--claim-timeout", "2s", "--max-attempts", "1", "--seed", "0"}, io.Discard)
	require.NoError(t, err)
}
