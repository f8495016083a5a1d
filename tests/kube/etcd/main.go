// Command etcd runs a single-member etcd, embedded from the published go.etcd.io/etcd/server/v3
// module, for the tests' real kube-apiserver (tests/helpers/real_kube_apiserver.ts). It serves
// plain HTTP on loopback only and keeps its data in the given directory; it exits on SIGINT or
// SIGTERM, or when the server fails.
//
//	etcd -data-dir DIR -listen-client-url http://127.0.0.1:PORT -listen-peer-url http://127.0.0.1:PORT
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data (required)")
	clientURL := flag.String("listen-client-url", "http://127.0.0.1:2379", "URL to serve clients on")
	peerURL := flag.String("listen-peer-url", "http://127.0.0.1:2380", "URL for the (unused) peer port")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()
	if *dataDir == "" {
		fail(fmt.Errorf("-data-dir is required"))
	}
	client, err := url.Parse(*clientURL)
	if err != nil {
		fail(err)
	}
	peer, err := url.Parse(*peerURL)
	if err != nil {
		fail(err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = true // throwaway test data: don't wait on the disk
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(err)
	}
	defer etcd.Close()

	select {
	case <-etcd.Server.ReadyNotify():
		fmt.Printf("etcd ready on %s\n", client)
	case <-time.After(60 * time.Second):
		fail(fmt.Errorf("etcd did not become ready within 60 s"))
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-etcd.Err():
		fail(err)
	case <-signals:
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "etcd:", err)
	os.Exit(1)
}
