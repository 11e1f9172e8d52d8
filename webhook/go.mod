module github.com/contrast-cc/contrast/webhook

go 1.26.0
