"""The memo the judges share: each distinct key computed once per batch, the limit clears before a request."""

import pytest

from redgame.llm.memo import Memo


def test_each_distinct_key_is_computed_once_in_one_batch_and_values_come_in_order():
    batches = []
    memo = Memo(lambda keys: (batches.append(list(keys)), [k.upper() for k in keys])[1])
    assert memo.get(["a", "b", "a"]) == ["A", "B", "A"]
    assert memo.get(["b", "c", "c", "a"]) == ["B", "C", "C", "A"]
    assert memo.get([]) == [] and batches == [["a", "b"], ["c"]]


def test_a_request_that_would_pass_the_limit_clears_first_and_keeps_all_its_own_keys():
    batches = []
    memo = Memo(lambda keys: (batches.append(list(keys)), [len(k) for k in keys])[1], limit=3)
    memo.get(["x", "yy"])
    assert memo.get(["yy", "zzz"]) == [2, 3] and set(memo.stored) == {"x", "yy", "zzz"}  # 3 fit
    assert memo.get(["x", "wwww"]) == [1, 4] and set(memo.stored) == {"x", "wwww"}     # 4 would not: cleared
    assert memo.get(["a", "bb", "ccc", "dddd"]) == [1, 2, 3, 4]  # more than the limit: kept for the request
    assert batches[-2:] == [["x", "wwww"], ["a", "bb", "ccc", "dddd"]]
    memo.clear()
    assert memo.stored == {}


def test_initial_values_are_not_computed_again():
    asked = []
    memo = Memo(lambda keys: (asked.extend(keys), [k * 2 for k in keys])[1], initial={"x": "given"})
    assert memo.get(["x", "y"]) == ["given", "yy"] and asked == ["y"]


def test_values_put_from_elsewhere_are_not_computed_again_and_keep_the_limit():
    asked = []
    memo = Memo(lambda keys: (asked.extend(keys), [k * 2 for k in keys])[1], limit=3)
    memo.put(["a", "b", "a"], ["first", "B", "second"])  # a repeated key keeps its first value
    assert memo.missing(["b", "c", "a", "c"]) == ["c"]
    assert memo.get(["a", "c"]) == ["first", "cc"] and asked == ["c"]
    memo.put(["d"], ["D"])  # a fourth key would pass the limit: cleared first
    assert memo.stored == {"d": "D"}
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        memo.put(["x", "y"], ["X"])


def test_keys_put_past_the_limit_are_read_back_without_computing_them():
    asked = []
    memo = Memo(lambda keys: (asked.extend(keys), [k * 2 for k in keys])[1], limit=3)
    memo.put(list("abcde"), list("ABCDE"))  # one request's values, more than the limit: all kept for it
    assert memo.get(list("abcde")) == list("ABCDE") and asked == []
