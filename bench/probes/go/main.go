// Command probe is the benchmark's window on the Go client's verification cache (the
// revocation propagation rows of bench/src/propagation.rs). It uses the client's public
// API only, with its default settings: Connect and VerifyToken.
//
// Usage: probe TARGET. A line protocol over stdin/stdout, one answer line per command:
//
//	(on start)              ready
//	verify TOKEN            valid | invalid | error MESSAGE
//	await TOKEN [LIMIT_MS]  refused UNIX_NANOS | timeout LAST_ANSWER
//
// await verifies through the cache every ~1 ms until it answers invalid, and prints the
// wall clock at that answer; with LIMIT_MS it gives up after that long.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	stpeter "github.com/st-peter/st-peter/client/go"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: probe TARGET")
		os.Exit(2)
	}
	client, err := stpeter.Connect(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()

	out := bufio.NewWriter(os.Stdout)
	say := func(line string) {
		out.WriteString(line + "\n")
		out.Flush()
	}
	say("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		switch {
		case len(fields) == 0:
		case fields[0] == "verify" && len(fields) == 2:
			say(verify(client, fields[1]))
		case fields[0] == "await" && (len(fields) == 2 || len(fields) == 3):
			limit := time.Duration(0)
			if len(fields) == 3 {
				ms, err := strconv.ParseUint(fields[2], 10, 32)
				if err != nil {
					say("error bad limit")
					continue
				}
				limit = time.Duration(ms) * time.Millisecond
			}
			say(await(client, fields[1], limit))
		default:
			say("error unknown command " + strconv.Quote(fields[0]))
		}
	}
}

// verify answers valid, invalid, or error MESSAGE (on one line).
func verify(client *stpeter.Client, token string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.VerifyToken(ctx, token)
	switch {
	case err == nil:
		return "valid"
	case errors.Is(err, stpeter.ErrInvalidToken):
		return "invalid"
	default:
		return "error " + strings.Join(strings.Fields(err.Error()), " ")
	}
}

// await polls verify every ~1 ms until the token is refused (or limit, if not zero, passes).
func await(client *stpeter.Client, token string, limit time.Duration) string {
	started := time.Now()
	for {
		answer := verify(client, token)
		if answer == "invalid" {
			return "refused " + strconv.FormatInt(time.Now().UnixNano(), 10)
		}
		if limit > 0 && time.Since(started) >= limit {
			return "timeout " + answer
		}
		time.Sleep(time.Millisecond)
	}
}
