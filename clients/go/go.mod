module github.com/flou-grpc/flou-grpc/clients/go

// Unused by this repository's own build, which is offline and in GOPATH mode
// (GO111MODULE=off) with Debian bookworm's Go packages: grpc-go 1.33,
// google.golang.org/protobuf 1.28, genproto 2020-04. It lets users elsewhere
// `go get github.com/flou-grpc/flou-grpc/clients/go/flou`; the versions below
// are a known-consistent set (any later ones work too). No go.sum is committed:
// run `go mod tidy` after cloning to work on this module itself.

go 1.19

require (
	google.golang.org/genproto/googleapis/api v0.0.0-20240108191215-35c7eff3a6b1
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240108191215-35c7eff3a6b1
	google.golang.org/grpc v1.60.1
	google.golang.org/protobuf v1.33.0
)
