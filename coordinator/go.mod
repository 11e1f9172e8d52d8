module github.com/contrast-cc/contrast/coordinator

go 1.26.0
