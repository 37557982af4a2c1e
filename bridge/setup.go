package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
)

// This file is `tmbridge setup`: it adds the search attributes the bridge
// sets on each run (TaskType and TaskID, Keyword) to its namespace with
// Temporal's operator API. It is idempotent: attributes already there
// with the right type are left alone; one there with another type is an
// error, and nothing is changed.

var setupCommand = command{"tmbridge setup",
	"tmbridge setup adds the search attributes TaskType and TaskID (Keyword) to the Temporal\n" +
		"namespace tmbridge with the same flags, env and config file would use, unless they are\n" +
		"there already. Exit status: 0 when they are there, 1 on a failure, 78 on a config error."}

// setupWait bounds the wait for added search attributes to show.
const setupWait = time.Minute

// runSetup is `tmbridge setup`.
func runSetup(args, environ []string, stdout, stderr io.Writer) int {
	cfg, err := load(setupCommand, args, environ, stdout)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tmbridge setup:", err)
		return ExitConfig
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "tmbridge setup: warning:", w)
	}
	copts, err := ClientOptions(cfg, environ, subcommandLogger(stderr, cfg))
	if err != nil {
		fmt.Fprintln(stderr, "tmbridge setup: Temporal client config:", err)
		return ExitConfig
	}
	ctx := context.Background()
	admin, err := dialTemporal(ctx, copts)
	if err != nil {
		fmt.Fprintf(stderr, "tmbridge setup: cannot connect to Temporal at %s: %v\n", copts.HostPort, err)
		return 1
	}
	defer admin.Close()
	if err := setupSearchAttributes(ctx, admin, copts.Namespace, stdout, setupWait); err != nil {
		fmt.Fprintln(stderr, "tmbridge setup:", err)
		return 1
	}
	return 0
}

// setupSearchAttributes adds the bridge's search attributes that
// namespace lacks, waits (within wait) until Temporal lists them, and
// says what it did on out.
func setupSearchAttributes(ctx context.Context, admin temporalAdmin, namespace string, out io.Writer, wait time.Duration) error {
	attrs, err := listSearchAttributes(ctx, admin, namespace)
	if err != nil {
		return err
	}
	missing, wrong := compareSearchAttributes(attrs)
	if len(wrong) > 0 {
		return fmt.Errorf("namespace %s: %s, but the bridge needs Keyword: nothing was changed (remove them with `temporal operator search-attribute remove`, or use another namespace)", namespace, strings.Join(wrong, "; "))
	}
	if len(missing) == 0 {
		_, err := fmt.Fprintf(out, "namespace %s: search attributes %s already present (Keyword): nothing to do\n", namespace, strings.Join(searchAttributes, ", "))
		return err
	}

	add := map[string]enums.IndexedValueType{}
	for _, name := range missing {
		add[name] = enums.INDEXED_VALUE_TYPE_KEYWORD
	}
	actx, cancel := context.WithTimeout(ctx, temporalCallTimeout)
	err = admin.AddSearchAttributes(actx, namespace, add)
	cancel()
	var exists *serviceerror.AlreadyExists
	switch {
	case errors.As(err, &exists):
		// Added since we looked (another setup): wait for them as ours.
	case isPermissionDenied(err):
		return fmt.Errorf("namespace %s: add search attributes %s: %w (on Temporal Cloud, add them as Keyword with tcld or the Cloud UI)", namespace, strings.Join(missing, ", "), err)
	case err != nil:
		return fmt.Errorf("namespace %s: add search attributes %s: %w", namespace, strings.Join(missing, ", "), err)
	}

	if err := waitSearchAttributes(ctx, admin, namespace, wait); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "namespace %s: added search attributes %s (Keyword)\n", namespace, strings.Join(missing, ", "))
	return err
}

// isPermissionDenied reports an error that says this caller may not add
// search attributes with the operator API (Temporal Cloud does not serve
// it).
func isPermissionDenied(err error) bool {
	var denied *serviceerror.PermissionDenied
	var unimplemented *serviceerror.Unimplemented
	return errors.As(err, &denied) || errors.As(err, &unimplemented)
}

// waitSearchAttributes polls, with backoff and within wait, until the
// namespace lists the bridge's search attributes as Keyword.
func waitSearchAttributes(ctx context.Context, admin temporalAdmin, namespace string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	delay := 100 * time.Millisecond
	for {
		attrs, err := listSearchAttributes(ctx, admin, namespace)
		if err == nil {
			missing, wrong := compareSearchAttributes(attrs)
			if len(wrong) > 0 {
				return fmt.Errorf("namespace %s: %s after adding them as Keyword", namespace, strings.Join(wrong, "; "))
			}
			if len(missing) == 0 {
				return nil
			}
			err = fmt.Errorf("still missing %s", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s: search attributes added, but not listed after %s: %w", namespace, wait, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// listSearchAttributes returns the namespace's custom search attributes,
// within temporalCallTimeout.
func listSearchAttributes(ctx context.Context, admin temporalAdmin, namespace string) (map[string]enums.IndexedValueType, error) {
	ctx, cancel := context.WithTimeout(ctx, temporalCallTimeout)
	defer cancel()
	attrs, err := admin.SearchAttributes(ctx, namespace)
	var notFound *serviceerror.NamespaceNotFound
	switch {
	case errors.As(err, &notFound):
		return nil, fmt.Errorf("namespace %q does not exist (temporal operator namespace create --namespace %s)", namespace, namespace)
	case err != nil:
		return nil, fmt.Errorf("namespace %s: list search attributes: %w", namespace, err)
	}
	return attrs, nil
}
