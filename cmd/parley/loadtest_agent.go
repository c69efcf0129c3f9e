package main

import (
	"fmt"
	"io"
)

// loadtestAgentCmd runs one agent of a distributed load test.
func loadtestAgentCmd(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "parley loadtest agent: not built yet")
	return 2
}

// loadtestCoordinatorCmd runs the coordinator of a distributed load test.
func loadtestCoordinatorCmd(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "parley loadtest coordinator: not built yet")
	return 2
}
