module github.com/contrast-cc/contrast/attest

go 1.26.0
