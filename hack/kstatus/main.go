// kstatus reads Kubernetes objects as JSON (one per line) on stdin and prints, for each, the
// status that sigs.k8s.io/cli-utils' kstatus library computes: `<Status> <message>`.
// The tests feed it real EdgeModel objects to check that our status follows kstatus.
package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		// UnmarshalJSON keeps integers int64, as the API machinery expects.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: not a Kubernetes object:", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		fmt.Printf("%s %s\n", res.Status, res.Message)
	}
}
