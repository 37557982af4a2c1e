// Package valid checks settings against their valid ranges, with messages
// that name the key and the range, so a typo fails at start-up.
package valid

import (
	"cmp"
	"fmt"
	"time"
)

// Range reports v outside [lo, hi] as "key: must be between lo and hi, got v".
func Range[T cmp.Ordered](key string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s: must be between %v and %v, got %v", key, lo, hi, v)
	}
	return nil
}

// RangeOrZero is Range where 0 (the default) is valid too.
func RangeOrZero[T cmp.Ordered](key string, v, lo, hi T) error {
	var zero T
	if v == zero {
		return nil
	}
	if err := Range(key, v, lo, hi); err != nil {
		return fmt.Errorf("%w (or 0 for the default)", err)
	}
	return nil
}

// Day is 24 hours, for readable bounds.
const Day = 24 * time.Hour
