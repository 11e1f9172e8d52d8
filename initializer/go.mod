module github.com/contrast-cc/contrast/initializer

go 1.26.0
