#!/usr/bin/env python3
"""Drives an SQS-compatible server (moto_server) for tests/sqs.rs.

Usage: sqs_helper.py ENDPOINT COMMAND ARGS [COMMAND ARGS ...]

Commands (one output line each, in order):
  ready                 wait (up to 30 s) until the server answers; prints "ok"
  create NAME           create a queue (FIFO when NAME ends in .fifo,
                        content-based de-duplication on); prints its URL
  create-visibility NAME SECONDS
                        create a queue whose messages come back SECONDS
                        after a receive that did not delete them
  send NAME BODY        send one message; prints its MessageId
  count NAME            prints visible + in-flight messages, e.g. "0 0"
  purge NAME            delete every message; prints "ok"

Credentials and region are dummies: moto accepts anything.
"""

import sys
import time

import boto3
import botocore.config
import botocore.exceptions


def client(endpoint):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def url(sqs, name):
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sqs = client(argv[1])
    args = argv[2:]
    while args:
        cmd, args = args[0], args[1:]
        if cmd == "ready":
            deadline = time.monotonic() + 30
            while True:
                try:
                    sqs.list_queues()
                    break
                except (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ReadTimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    # poll interval of a bounded retry (30 s deadline above)
                    time.sleep(0.1)
            print("ok")
        elif cmd in ("create", "create-visibility"):
            name, args = args[0], args[1:]
            attributes = {}
            if name.endswith(".fifo"):
                attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
            if cmd == "create-visibility":
                attributes["VisibilityTimeout"] = args[0]
                args = args[1:]
            print(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        elif cmd == "send":
            name, body, args = args[0], args[1], args[2:]
            extra = {}
            if name.endswith(".fifo"):
                extra = {"MessageGroupId": "tests"}
            print(sqs.send_message(QueueUrl=url(sqs, name), MessageBody=body, **extra)["MessageId"])
        elif cmd == "count":
            name, args = args[0], args[1:]
            attrs = sqs.get_queue_attributes(
                QueueUrl=url(sqs, name),
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            print(attrs["ApproximateNumberOfMessages"],
                  attrs["ApproximateNumberOfMessagesNotVisible"])
        elif cmd == "purge":
            name, args = args[0], args[1:]
            sqs.purge_queue(QueueUrl=url(sqs, name))
            print("ok")
        else:
            print(f"unknown command {cmd!r}", file=sys.stderr)
            return 2
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
