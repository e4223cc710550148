module github.com/kez-chat/kezd/protocol

go 1.26.8
