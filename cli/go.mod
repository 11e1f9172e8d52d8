module github.com/contrast-cc/contrast/cli

go 1.26.0
