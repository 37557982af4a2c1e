#!/usr/bin/env python3
"""A task handler in Python for tmbridge's exec handler.

Params arrive as JSON on stdin; the result goes to stdout as JSON. Exit 2
means "bad params, do not retry" (see permanent_exit_codes in the config);
any other non-zero exit is retried, with the tail of stderr as the error.
"""
import json
import sys


def main() -> int:
    params = json.load(sys.stdin)
    text = params.get("text")
    if not isinstance(text, str):
        print("param 'text' must be a string", file=sys.stderr)
        return 2
    words = text.split()
    json.dump({"words": len(words), "longest": max(words, key=len, default="")}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
