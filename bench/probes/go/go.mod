module github.com/st-peter/st-peter/bench/probes/go

go 1.26.0

require github.com/st-peter/st-peter/client/go v0.0.0

require (
	github.com/skip2/go-qrcode v0.0.0-20200617195104-da1b6568686e // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The client from this checkout, so the probe measures the code beside it.
replace github.com/st-peter/st-peter/client/go => ../../../client/go
