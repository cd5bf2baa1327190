"""The chat-env skeleton GeneralPoints and V-IRL share: their spaces, observations and bounds.

Both environments are chats: a system turn, a task turn (whose content holds an image placeholder
in the image modality), then per failed attempt the policy's answer and a feedback turn. This
module holds what they have in common:

- `ChatEnv`: their base class (render metadata);
- `Variant` / `Modality`: the argument types of both constructors;
- `PROMPT_CHARSET` (every system and user text is ASCII) and `MAX_ANSWER_CHARS` (longer answers
  are judged wrong without being scanned, and echoed clipped to this bound);
- `answer_space`, `chat_observation_space`, `opening_messages`, `chat_observation`: the action
  space, the observation space, the first two turns and the observation dict;
- `ChatMessages`: the space of a conversation. Gymnasium has no space for a variable-length list
  of dicts whose first user turn may hold an image placeholder, so it declares one with explicit
  bounds:

  - at most ``max_messages`` messages; each a dict with exactly the keys ``role`` and ``content``;
  - ``system`` and ``user`` contents are in ``prompt_text`` (a `gymnasium.spaces.Text` with the
    environment's charset and length bound);
  - with ``image_in_first_user=True`` the first user content is the HF multimodal list
    ``[{"type": "image"}, {"type": "text", "text": <in prompt_text>}]``;
  - ``assistant`` contents are the policy's raw answers: any str of at most ``max_answer_chars``.

  It is what `check_env` checks observations against.
"""

from __future__ import annotations

import string
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Dict, Space, Text

Variant = Literal["id", "rule_ood", "visual_ood"]
Modality = Literal["text", "image"]
PROMPT_CHARSET = frozenset(string.printable)  # ASCII letters, digits, punctuation, whitespace
MAX_ANSWER_CHARS = 4096  # longer answers are judged wrong without being scanned


class ChatEnv(gym.Env):
    """Base of the chat environments: what Gymnasium needs to know about their rendering."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}


def answer_space() -> Text:
    """The action space: the policy's raw text, of at most `MAX_ANSWER_CHARS` ASCII characters."""
    return Text(max_length=MAX_ANSWER_CHARS, min_length=0, charset=PROMPT_CHARSET)


def chat_observation_space(
    *, max_prompt_chars: int, max_attempts: int, image_shape: tuple[int, int, int] | None
) -> Dict:
    """`Dict(messages=ChatMessages)`, plus `image=Box(0, 255, image_shape, uint8)` unless it is None.

    The conversation holds a system turn, a task turn and, per attempt, an answer and a feedback
    turn; system and user texts have at most ``max_prompt_chars`` characters of `PROMPT_CHARSET`.
    """
    messages = ChatMessages(
        Text(max_length=max_prompt_chars, min_length=0, charset=PROMPT_CHARSET),
        max_messages=2 + 2 * max_attempts,
        max_answer_chars=MAX_ANSWER_CHARS,
        image_in_first_user=image_shape is not None,
    )
    if image_shape is None:
        return Dict({"messages": messages})
    return Dict({"messages": messages, "image": Box(0, 255, image_shape, np.uint8)})


def opening_messages(system: str, task: str, *, with_image: bool) -> list[dict]:
    """The system turn and the task turn; with an image, the task content is the HF multimodal list."""
    content: str | list = [{"type": "image"}, {"type": "text", "text": task}] if with_image else task
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def chat_observation(messages: list[dict], image: np.ndarray | None) -> dict[str, Any]:
    """The observation: a copy of the message list, plus the picture (H, W, 3) uint8 when there is one."""
    if image is None:
        return {"messages": list(messages)}
    return {"messages": list(messages), "image": image}


class ChatMessages(Space[list]):
    """A chat conversation, as a list of ``{"role": ..., "content": ...}`` dicts (see module doc)."""

    def __init__(
        self,
        prompt_text: Text,
        *,
        max_messages: int,
        max_answer_chars: int,
        image_in_first_user: bool = False,
        seed: int | np.random.Generator | None = None,
    ):
        if max_messages < 1 or max_answer_chars < 0:
            raise ValueError(
                f"need max_messages >= 1 and max_answer_chars >= 0, got {max_messages} and {max_answer_chars}"
            )
        self.prompt_text = prompt_text
        self.max_messages = max_messages
        self.max_answer_chars = max_answer_chars
        self.image_in_first_user = image_in_first_user
        super().__init__(shape=None, dtype=None, seed=seed)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a conversation of this space."""
        if not isinstance(x, list) or not 1 <= len(x) <= self.max_messages:
            return False
        first_user = True
        for message in x:
            if not isinstance(message, dict) or message.keys() != {"role", "content"}:
                return False
            role, content = message["role"], message["content"]
            if role == "assistant":
                ok = isinstance(content, str) and len(content) <= self.max_answer_chars
            elif role == "user" and first_user and self.image_in_first_user:
                ok = self._is_image_content(content)
            else:
                ok = role in ("system", "user") and self.prompt_text.contains(content)
            first_user = first_user and role != "user"
            if not ok:
                return False
        return True

    def _is_image_content(self, content: Any) -> bool:
        return (
            isinstance(content, list)
            and len(content) == 2
            and content[0] == {"type": "image"}
            and isinstance(content[1], dict)
            and content[1].keys() == {"type", "text"}
            and content[1]["type"] == "text"
            and self.prompt_text.contains(content[1]["text"])
        )

    def sample(self, mask: Any = None, probability: Any = None) -> list:
        """A random system + user conversation (masks are not supported)."""
        if mask is not None or probability is not None:
            raise ValueError("ChatMessages.sample does not support mask or probability; pass None")
        user = self._sample_text()
        content = [{"type": "image"}, {"type": "text", "text": user}] if self.image_in_first_user else user
        messages = [{"role": "system", "content": self._sample_text()}, {"role": "user", "content": content}]
        return messages[-self.max_messages :]

    def _sample_text(self) -> str:
        chars = self.prompt_text.character_list
        length = int(self.np_random.integers(self.prompt_text.min_length, min(self.prompt_text.max_length, 256) + 1))
        return "".join(chars[i] for i in self.np_random.integers(0, len(chars), size=length))

    @property
    def is_np_flattenable(self) -> bool:
        """False: a conversation has no fixed-size array form."""
        return False

    def __repr__(self) -> str:
        return (
            f"ChatMessages(max_messages={self.max_messages}, prompt_text={self.prompt_text!r}, "
            f"max_answer_chars={self.max_answer_chars}, image_in_first_user={self.image_in_first_user})"
        )

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, ChatMessages)
            and self.prompt_text == other.prompt_text
            and self.max_messages == other.max_messages
            and self.max_answer_chars == other.max_answer_chars
            and self.image_in_first_user == other.image_in_first_user
        )
