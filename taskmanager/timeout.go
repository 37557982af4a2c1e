package taskmanager

import "time"

// Timeout returns the bound on each call (Options.Timeout). A call that
// timed out may still land on the server later: a retry of a write waits
// at least this long before it reads the result.
func (c *Client) Timeout() time.Duration { return c.timeout }
