"""``abswin-convert push``: publish a converted output, with a generated model card."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .support import emit, json_option, user_errors

if TYPE_CHECKING:
    from ..hub.push import PushResult


@click.command("push", short_help="Upload a converted output to the Hugging Face Hub with a model card.")
@click.argument("path")
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub repo to push to (created when missing).")
@click.option("--private", is_flag=True, help="Create the repo private (a repo that exists keeps its visibility).")
@click.option("--revision", default=None, help="Branch to push to (default main; created off main when missing).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--dry-run", is_flag=True, help="Print what would be uploaded (files, sizes, sha256, card); send nothing.")
@click.option("--overwrite-card", is_flag=True, help="Replace a README.md the repo already has (default: keep it).")
@json_option
@user_errors
def push_command(
    path: str, repo_id: str, private: bool, revision: str | None, create_pr: bool, dry_run: bool, overwrite_card: bool,
    as_json: bool,
) -> None:
    """Upload PATH (a folder `convert -o` wrote, or one weight file) to the Hub with a model card.

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT picks the Hub.

    \b
    Examples:
      abswin-convert push hiera-448/ --repo-id me/hiera-tiny-448 --dry-run
      abswin-convert push hiera-448/ --repo-id me/hiera-tiny-448 --private
      abswin-convert push sam_vit_b_1536.pth --repo-id me/sam-vit-b-1536 --create-pr
    """
    from ..hub.push import push

    result = push(path, repo_id, private=private, revision=revision, create_pr=create_pr, dry_run=dry_run,
                  overwrite_card=overwrite_card)
    emit(result.to_json(), as_json, push_lines(result))


def push_lines(result: PushResult) -> list[str]:
    """What ``push`` prints: where the files went (or would go), each file, and for a dry run the card."""
    where = f"{result.repo_id}@{result.revision}"
    files = [f"  {f.path_in_repo:<28} {f.size:>14,} bytes  sha256 {f.sha256}" for f in result.files]
    if result.dry_run:
        card = ["", f"--- {result.files[-1].path_in_repo} ---", *result.card.splitlines()]
        return [f"dry run: would upload to {where}"] + files + card
    if not result.changed:
        return [f"{where} already holds these files; no commit made (head {result.commit})"] + files
    pushed = f"opened {result.pull_request} on {where}" if result.pull_request else f"pushed to {where}"
    kept = ["  kept the repo's own README.md (--overwrite-card replaces it)"] if result.card_kept else []
    return [f"{pushed}: commit {result.commit}", f"  {result.commit_url}"] + files + kept
