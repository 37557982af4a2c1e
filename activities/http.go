package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// HTTPConfig posts a task's params to a URL as its handler.
type HTTPConfig struct {
	// URL receives POST with the params as a JSON body. Required.
	URL string `koanf:"url"`
	// Headers are sent as they are.
	Headers map[string]string `koanf:"headers"`
	// HeadersFromEnv maps a header to the env var holding its value (for
	// tokens: they stay out of the config file and out of logs).
	HeadersFromEnv map[string]string `koanf:"headers_from_env"`
}

// Validate reports what is wrong with the config.
func (c *HTTPConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("http.url: want an http(s) URL, got %q", c.URL)
	}
	for h, name := range c.HeadersFromEnv {
		if _, ok := os.LookupEnv(name); !ok {
			return fmt.Errorf("http.headers_from_env: %s: env var %s is not set", h, name)
		}
	}
	return nil
}

// HTTP returns a Handler that POSTs the params to the configured URL. A 2xx
// JSON body is the result; a 4xx fails the task for good (but 408 and 429,
// which retry, honouring Retry-After); 5xx and network errors retry.
func HTTP(c HTTPConfig, client *http.Client) Handler {
	if client == nil {
		client = &http.Client{}
	}
	headers := http.Header{}
	for h, v := range c.Headers {
		headers.Set(h, v)
	}
	for h, name := range c.HeadersFromEnv {
		headers.Set(h, os.Getenv(name))
	}
	return HandlerFunc(func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(orEmptyObject(params)))
		if err != nil {
			return nil, Permanent(err)
		}
		req.Header = headers.Clone()
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		if in, ok := TaskInfo(ctx); ok {
			req.Header.Set("X-Task-Id", in.TaskID)
			req.Header.Set("X-Task-Type", in.TaskType)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("POST %s: %w", redacted(c.URL), err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return nil, fmt.Errorf("POST %s: read answer: %w", redacted(c.URL), err)
		}
		e := fmt.Errorf("POST %s: %d %s: %s", redacted(c.URL), resp.StatusCode, http.StatusText(resp.StatusCode), tail(body, 500))
		switch code := resp.StatusCode; {
		case code >= 200 && code < 300:
			if len(bytes.TrimSpace(body)) == 0 {
				return json.RawMessage(`{}`), nil
			}
			if !json.Valid(body) {
				return nil, Permanent(fmt.Errorf("POST %s: answer is not JSON: %q", redacted(c.URL), tail(body, 200)))
			}
			return body, nil
		case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
			return nil, Transient(e, retryAfter(resp.Header.Get("Retry-After")))
		case code >= 400 && code < 500:
			return nil, Permanent(e)
		default:
			return nil, e
		}
	})
}

func retryAfter(v string) time.Duration {
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<url>"
	}
	u.RawQuery = ""
	return u.Redacted()
}
