module sandbar/agent

go 1.19
