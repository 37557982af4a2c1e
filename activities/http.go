package activities

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prismq/tmbridge/taskmanager"
	"golang.org/x/net/http/httpguts"
)

// HTTPConfig posts a task's params to a URL as its handler.
type HTTPConfig struct {
	// URL receives POST with the params as a JSON body. Required. Errors
	// show it without query, fragment and userinfo; tokens belong in
	// HeadersFromEnv all the same.
	URL string `json:"url,omitempty" koanf:"url"`
	// Headers are sent as they are.
	Headers map[string]string `json:"headers,omitempty" koanf:"headers"`
	// HeadersFromEnv maps a header to the env var holding its value (for
	// tokens: they stay out of the config file and out of logs).
	HeadersFromEnv map[string]string `json:"headers_from_env,omitempty" koanf:"headers_from_env"`
}

// Validate reports what is wrong with the config.
func (c *HTTPConfig) Validate() error {
	if err := c.checkURL(); err != nil {
		return err
	}
	return c.checkHeaders(true)
}

// checkHeaders refuses a header net/http would refuse on every request;
// needEnv: each env var of HeadersFromEnv must be set. A value is never
// shown (it may be a token).
func (c *HTTPConfig) checkHeaders(needEnv bool) error {
	for _, h := range slices.Sorted(maps.Keys(c.Headers)) {
		if !httpguts.ValidHeaderFieldName(h) {
			return fmt.Errorf("http.headers: %q is not a valid header name", h)
		}
		if !httpguts.ValidHeaderFieldValue(c.Headers[h]) {
			return fmt.Errorf("http.headers: %s: the value holds a character a header may not (a line end?)", h)
		}
	}
	for _, h := range slices.Sorted(maps.Keys(c.HeadersFromEnv)) {
		name := c.HeadersFromEnv[h]
		if !httpguts.ValidHeaderFieldName(h) {
			return fmt.Errorf("http.headers_from_env: %q is not a valid header name", h)
		}
		v, ok := os.LookupEnv(name)
		if !ok && needEnv {
			return fmt.Errorf("http.headers_from_env: %s: env var %s is not set", h, name)
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("http.headers_from_env: %s: env var %s holds a character a header may not (a line end?)", h, name)
		}
	}
	return nil
}

// checkURL refuses a URL that is not http(s) with a host.
func (c *HTTPConfig) checkURL() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("http.url: want an http(s) URL, got %q", redacted(c.URL))
	}
	return nil
}

// Bounds of the http handler.
const (
	// maxHTTPAnswer is the most of an answer the handler reads, the most a
	// handler may return (MaxResultBytes): a 2xx answer longer than this
	// fails the task for good. (TaskManager stores at most 65,535 bytes of a
	// result, taskmanager.MaxStoredBytes: a longer one that fits here fails
	// the task when its outcome is built.)
	maxHTTPAnswer = MaxResultBytes
	// maxHTTPRedirects is how many redirects, all to the configured URL's
	// scheme, host and port, one call follows.
	maxHTTPRedirects = 3
)

// HTTP returns a Handler that POSTs the params to the configured URL. A 2xx
// JSON body is the result; a 4xx fails the task for good (but 408 and 429,
// which retry, honouring Retry-After as taskmanager.ParseRetryAfter reads
// it); 5xx and network errors retry.
//
// Redirects are followed only to the configured URL's scheme, host and
// port, at most 3 of them: a redirect elsewhere would take the headers
// (tokens from headers_from_env) and the params there, so it fails the
// task for good, naming both hosts. A 2xx answer over MaxResultBytes fails the task
// for good. Errors show the URL without query, fragment and userinfo, and
// quote the answer with the header values and URL tokens hidden (an
// endpoint may echo them).
//
// client may be nil (a default client); its CheckRedirect is replaced by
// the policy above (the handler uses a copy). A URL or a header Validate
// refuses fails every task, for good, saying so.
func HTTP(c HTTPConfig, client *http.Client) Handler {
	if err := cmp.Or(c.checkURL(), c.checkHeaders(false)); err != nil {
		return misconfigured(err)
	}
	hc := http.Client{}
	if client != nil {
		hc = *client
	}
	hc.CheckRedirect = sameOriginRedirects
	headers := http.Header{}
	secrets := urlSecrets(c.URL)
	for h, v := range c.Headers {
		headers.Set(h, v)
		secrets = append(secrets, v)
	}
	for h, name := range c.HeadersFromEnv {
		headers.Set(h, os.Getenv(name))
		secrets = append(secrets, os.Getenv(name))
	}
	hide := newRedactor(secrets...)
	where := hide.text(redacted(c.URL)) // a webhook's token may be in its path
	return HandlerFunc(func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(taskmanager.OrEmptyObject(params)))
		if err != nil {
			return nil, Permanent(fmt.Errorf("POST %s: %w", where, hide.error(taskmanager.RedactURLError(err))))
		}
		req.Header = headers.Clone()
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		if in, ok := TaskInfo(ctx); ok {
			req.Header.Set("X-Task-Id", in.TaskID)
			req.Header.Set("X-Task-Type", in.TaskType)
		}
		resp, err := hc.Do(req)
		if err != nil {
			var off *offOriginError
			if errors.As(err, &off) {
				return nil, Permanent(fmt.Errorf("POST %s: %s", where, hide.text(off.Error()))) // its host may echo a token
			}
			return nil, fmt.Errorf("POST %s: %w", where, hide.error(taskmanager.RedactURLError(err)))
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPAnswer+1))
		if err != nil {
			return nil, fmt.Errorf("POST %s: read answer: %w", where, err)
		}
		tooLong := len(body) > maxHTTPAnswer
		if tooLong {
			body = body[:maxHTTPAnswer]
		}
		failed := func() error {
			quoted := hide.tail(body, 500)
			if tooLong {
				quoted = hide.cutTail(body, 500)
			}
			return fmt.Errorf("POST %s: %d %s: %s", where, resp.StatusCode, http.StatusText(resp.StatusCode), quoted)
		}
		switch code := resp.StatusCode; {
		case code >= 200 && code < 300:
			if tooLong {
				return nil, Permanent(fmt.Errorf("POST %s: answer passed %d bytes (TaskManager stores at most %d of a result)", where, maxHTTPAnswer, taskmanager.MaxStoredBytes))
			}
			body = taskmanager.OrEmptyObject(body)
			if !json.Valid(body) {
				return nil, Permanent(fmt.Errorf("POST %s: answer is not JSON: %q", where, hide.tail(body, 200)))
			}
			return body, nil
		case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
			return nil, Transient(failed(), taskmanager.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
		case code >= 400 && code < 500:
			return nil, Permanent(failed())
		default:
			return nil, failed()
		}
	})
}

// sameOriginRedirects is the handler's http.Client.CheckRedirect: it
// follows at most maxHTTPRedirects redirects, each to the scheme, host and
// port of the first request.
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	if from := via[0].URL; origin(req.URL) != origin(from) {
		return &offOriginError{from: from.Scheme + "://" + from.Host, to: req.URL.Scheme + "://" + req.URL.Host}
	}
	if len(via) > maxHTTPRedirects {
		return fmt.Errorf("stopped after %d redirects", maxHTTPRedirects)
	}
	return nil
}

// origin is a URL's scheme, host and port, the port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// offOriginError is a redirect refused because it leaves the configured
// scheme, host and port.
type offOriginError struct{ from, to string }

func (e *offOriginError) Error() string {
	return fmt.Sprintf("redirect from %s to %s refused: only redirects to the same scheme, host and port are followed", e.from, e.to)
}

// redacted shows a URL without userinfo, query and fragment.
func redacted(raw string) string { return taskmanager.RedactURL(raw) }
