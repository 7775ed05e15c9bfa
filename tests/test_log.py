"""The JSON handler writes each event-loop turn's lines in one write, in order, and loses none:
not when no loop runs, not when a loop stops before its turn ends."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from gateway.log import JsonHandler


class CountingStream(io.StringIO):
    """A stream that counts its writes, as the system calls they would be."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler() -> tuple[JsonHandler, CountingStream]:
    stream = CountingStream()
    return JsonHandler(stream), stream


def test_a_turns_lines_go_out_in_one_write_in_order() -> None:
    json_handler, stream = handler()
    logger = logging.getLogger("test.log.turn")
    logger.addHandler(json_handler)
    logger.propagate = False

    async def requests() -> None:
        json_handler.write_line('{"n": 1}')
        logger.warning("in between")  # a record of the logging module, in its place
        json_handler.write_line('{"n": 3}')
        assert stream.writes == 0  # not before the turn ends
        await asyncio.sleep(0)
        assert stream.writes == 1
        json_handler.write_line('{"n": 4}')

    try:
        asyncio.run(requests())
    finally:
        logger.removeHandler(json_handler)
    lines = stream.getvalue().splitlines()
    assert [orjson.loads(line).get("n", orjson.loads(line).get("msg")) for line in lines] == [
        1, "in between", 3, 4]
    assert stream.writes == 2


def test_with_no_loop_running_a_line_is_written_at_once() -> None:
    json_handler, stream = handler()
    json_handler.write_line('{"n": 1}')
    assert stream.getvalue() == '{"n": 1}\n' and stream.writes == 1


def test_the_lines_of_a_loop_that_stopped_mid_turn_are_written_first_or_at_flush() -> None:
    json_handler, stream = handler()
    loop = asyncio.new_event_loop()

    async def last_words() -> None:
        json_handler.write_line('{"n": 1}')
        loop.stop()  # the turn's end never runs

    task = loop.create_task(last_words())
    loop.run_forever()
    assert task.done()
    loop.close()
    assert stream.getvalue() == ""
    json_handler.write_line('{"n": 2}')  # from no loop: the stopped loop's line first
    assert stream.getvalue().splitlines() == ['{"n": 1}', '{"n": 2}']

    other = asyncio.new_event_loop()
    other.run_until_complete(asyncio.sleep(0, json_handler.write_line('{"n": 3}')))
    json_handler.flush()  # as logging.shutdown does at exit
    other.close()
    assert stream.getvalue().splitlines()[-1] == '{"n": 3}'
