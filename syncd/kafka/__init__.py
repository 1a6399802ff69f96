"""Kafka plumbing the joint uses: librdkafka client settings (`client`), dead letters
(`deadletter`), end offsets for the lag gauges (`endoffsets`) and contiguous offset
progress (`progress`). Never imports the pipeline, the rules or the commands.
"""
