"""Documents generated from the argument parser, so they cannot drift from it.

- usage(): the short BSD-style usage of `escp --usage`, `[-346ABC...] [-c CIPHER] ...`, the
  format bash-completion's scp helpers parse for options (`complete -F _scp escp`);
- man_page(): the manual page of `escp --man`, roff for man(1);
- completion(): the bash and zsh completion scripts of `escp --completion bash|zsh`:
  options, option values (files, commands, choices), local files, hosts, and remote paths
  listed over ssh with the ssh options of the command line being completed.
"""

from __future__ import annotations

import argparse
import datetime
import re

from . import __version__

USAGE_WIDTH = 80
OPERANDS = ("SRC ...", "[user@]host:[path]")
FILE_VALUES = {"identity", "ssh_config", "logfile", "json_path", "trace", "checksum_file", "filelist",
               "verify_manifest"}  # options whose value is a local file
COMMAND_VALUES = {"ssh", "escp"}  # options whose value is a program
WORD_VALUES = {"ioengine": ("posix", "dummy", "posix::dummy", "dummy::posix")}  # besides argparse choices

NAME_LINE = "escp \\- high-speed verified file transfer over parallel encrypted streams"
DESCRIPTION = """\
escp copies files like scp(1): ssh starts the receiver (escp --server) on the other host and
carries the session set-up; the data then moves over several parallel TCP streams, AES-GCM
encrypted, in fixed-size blocks, checksummed end to end. A file appears under its final name
only once all of it arrived and its digest matched.
"""
SECTIONS = (
    ("EXIT STATUS", "0 success; 1 the transfer failed (or every file failed); 2 usage error, nothing was "
                    "sent; 3 some files failed, each named on its own line."),
    ("SEE ALSO", "scp(1), rsync(1), ssh(1); docs/usage.md of the escp sources has the full reference, with "
                 "a section for scp and rsync users."),
)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The documented options, in the parser's order."""
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def metavar(action: argparse.Action) -> str:
    if action.choices:
        return "|".join(str(c) for c in action.choices)
    if isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    return action.metavar or action.dest.upper()


def _short_flag(opt: str) -> bool:
    return len(opt) == 2 and opt[0] == "-" and opt[1] != "-"


# --- --usage ---------------------------------------------------------------------------------
def usage(parser: argparse.ArgumentParser) -> str:
    """`usage: escp [-346ABC...] [-c CIPHER] ... SRC ... [user@]host:[path]`, wrapped."""
    bundle: list[str] = []
    items: list[str] = []
    for a in options(parser):
        for opt in a.option_strings:
            if not takes_value(a) and _short_flag(opt):
                bundle.append(opt[1])
            else:
                items.append(f"[{opt} {metavar(a)}]" if takes_value(a) else f"[{opt}]")
    bundle.sort(key=lambda c: (c.lower(), c.islower()))
    words = [f"[-{''.join(bundle)}]", *items, *OPERANDS]
    head = f"usage: {parser.prog} "
    lines, line = [], head
    for w in words:
        if len(line) + len(w) > USAGE_WIDTH and line.strip() != head.strip():
            lines.append(line.rstrip())
            line = " " * len(head)
        line += w + " "
    lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


# --- --man -------------------------------------------------------------------------------------
def roff(text: str) -> str:
    """Plain text as roff: backslashes and dashes escaped, no line starting with a control dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.splitlines())


def man_page(parser: argparse.ArgumentParser) -> str:
    today = datetime.date.today().isoformat()
    out = [f'.TH ESCP 1 "{today}" "escp {__version__}" "User Commands"', ".SH NAME", NAME_LINE,
           ".SH SYNOPSIS"]
    out += [".nf", roff(usage(parser).removeprefix("usage: ").rstrip()), ".fi",
            ".SH DESCRIPTION", roff(DESCRIPTION.rstrip()), ".SH OPTIONS"]
    for a in options(parser):
        value = f" \\fI{roff(metavar(a))}\\fR" if takes_value(a) else ""
        names = ", ".join(f"\\fB{roff(o)}\\fR{value}" for o in a.option_strings)
        out += [".TP", names, roff(a.help or "")]
    for title, body in SECTIONS:
        out += [f".SH {title}", roff(body)]
    return "\n".join(out) + "\n"


# --- --completion ------------------------------------------------------------------------------
def _value_kinds(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Option strings that take a value, grouped by what completes it."""
    kinds: dict[str, list[str]] = {"file": [], "command": [], "none": []}
    for a in options(parser):
        if not takes_value(a):
            continue
        if a.dest in FILE_VALUES:
            kinds["file"] += a.option_strings
        elif a.dest in COMMAND_VALUES:
            kinds["command"] += a.option_strings
        elif a.choices or a.dest in WORD_VALUES:
            words = [str(c) for c in a.choices] if a.choices else list(WORD_VALUES[a.dest])
            kinds.setdefault("words:" + " ".join(words), []).extend(a.option_strings)
        else:
            kinds["none"] += a.option_strings
    return kinds


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "bash":
        return bash_completion(parser)
    if shell == "zsh":
        return zsh_completion(parser)
    raise ValueError(f"no completion for {shell}")


def bash_completion(parser: argparse.ArgumentParser) -> str:
    cases = []
    for kind, opts in _value_kinds(parser).items():
        if not opts:
            continue
        pattern = "|".join(opts)
        if kind == "file":
            action = "_escp_local"
        elif kind == "command":
            action = 'mapfile -t COMPREPLY < <(compgen -c -- "$cur" | sed "s/$/ /")'
        elif kind == "none":
            action = ":"
        else:
            action = f'mapfile -t COMPREPLY < <(compgen -W "{kind[6:]}" -- "$cur" | sed "s/$/ /")'
        cases.append(f"        {pattern}) {action}; return ;;")
    all_options = " ".join(o for a in options(parser) for o in a.option_strings)
    return BASH_TEMPLATE.replace("@VERSION@", __version__).replace("@OPTIONS@", all_options) \
        .replace("@VALUE_CASES@", "\n".join(cases))


def _zsh_spec(a: argparse.Action) -> list[str]:
    help_text = re.sub(r"[\[\]:'\\]", "", (a.help or "").split(";")[0].split(" (")[0])[:70]
    if not takes_value(a):
        value = ""
    elif a.dest in FILE_VALUES:
        names = a.metavar if isinstance(a.metavar, tuple) else (metavar(a),)
        value = "".join(f":{name}:_files" for name in names)
    elif a.dest in COMMAND_VALUES:
        value = f":{metavar(a)}:_command_names -e"
    elif a.choices or a.dest in WORD_VALUES:
        words = [str(c) for c in a.choices] if a.choices else list(WORD_VALUES[a.dest])
        value = f":{metavar(a)}:({' '.join(words)})"
    else:
        value = f":{metavar(a)}: "
    repeat = "*" if a.nargs is None and isinstance(a, argparse._AppendAction) else ""
    return [f"'{repeat}{opt}[{help_text}]{value}'" for opt in a.option_strings]


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    specs = [s for a in options(parser) for s in _zsh_spec(a)]
    return ZSH_TEMPLATE.replace("@VERSION@", __version__).replace("@SPECS@", " \\\n    ".join(specs))


BASH_TEMPLATE = r"""# bash completion for escp (escp @VERSION@), generated by `escp --completion bash`.
# Install: escp --completion bash > ~/.local/share/bash-completion/completions/escp
#      or: source <(escp --completion bash)   (in ~/.bashrc)
# Completes options and their values, local files, hosts ([user@]host:) and remote paths
# (host:path, listed over ssh in batch mode with the -F -P -i -J -o -4 -6 of the line).

# each line of stdin quoted for the command line; a space after names that are not directories
_escp_quote() {
    local line
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        if [[ $line == */ ]]; then printf '%q\n' "$line"; else printf '%q \n' "$line"; fi
    done
}

_escp_local() {
    local f
    mapfile -t COMPREPLY < <(compgen -f -- "$cur" | while IFS= read -r f; do
        if [[ -d $f ]]; then printf '%s/\n' "$f"; else printf '%s\n' "$f"; fi
    done | _escp_quote)
}

_escp_hosts() {
    local cfg=${_escp_config:-$HOME/.ssh/config} user="" part=$cur
    if [[ $part == *@* ]]; then user=${part%%@*}@; part=${part#*@}; fi
    {
        [[ -r $cfg ]] && sed -n 's/^[[:space:]]*[Hh][Oo][Ss][Tt][[:space:]=]\+//p' "$cfg" | tr ' \t' '\n\n'
        [[ -r $HOME/.ssh/known_hosts ]] && cut -d' ' -f1 "$HOME/.ssh/known_hosts" | tr ',' '\n'
    } 2>/dev/null | grep -v '[*?!|]' | sort -u | while IFS= read -r h; do
        [[ $h == "$part"* ]] && printf '%s%s:\n' "$user" "$h"
    done
}

_escp_remote() {
    local userhost=${cur%%:*} path=${cur#*:} tilde="" i
    local -a ssh=(ssh -o BatchMode=yes -o ConnectTimeout=5)
    for ((i = 1; i < ${#_escp_words[@]}; i++)); do
        case ${_escp_words[i]} in
            -F|-i|-J|-o) ssh+=("${_escp_words[i]}" "${_escp_words[i+1]}"); ((i++)) ;;
            -P) ssh+=(-p "${_escp_words[i+1]}"); ((i++)) ;;
            -4|-6) ssh+=("${_escp_words[i]}") ;;
        esac
    done
    # the remote shell expands a leading ~ or ~user only when it is not quoted
    if [[ $path =~ ^(~[A-Za-z0-9._-]*)(.*)$ ]]; then tilde=${BASH_REMATCH[1]}; path=${BASH_REMATCH[2]}; fi
    [[ -n $path ]] && path=$(printf '%q' "$path")
    "${ssh[@]}" -- "$userhost" "command ls -aF1dL -- $tilde$path*" 2>/dev/null |
        sed -e 's/[*@|=]$//' -e "s|^|$userhost:|"
}

_escp() {
    local line=${COMP_LINE:0:COMP_POINT} cur="" prev _escp_config="" i
    [[ $line =~ (([^[:space:]\\]|\\.)*)$ ]] && cur=${BASH_REMATCH[1]}
    cur=$(printf '%s' "$cur" | sed 's/\\\(.\)/\1/g')
    local -a _escp_words
    read -ra _escp_words <<< "${line%"${BASH_REMATCH[1]}"}"
    prev=${_escp_words[${#_escp_words[@]}-1]}
    for ((i = 1; i < ${#_escp_words[@]}; i++)); do
        [[ ${_escp_words[i]} == -F ]] && _escp_config=${_escp_words[i+1]}
    done
    COMPREPLY=()
    case $prev in
@VALUE_CASES@
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "@OPTIONS@" -- "$cur" | sed 's/$/ /')
    elif [[ $cur == *:* && ${cur%%:*} != */* ]]; then
        mapfile -t COMPREPLY < <(_escp_remote | _escp_quote)
    else
        _escp_local
        [[ $cur == */* || $cur == .* || $cur == ~* ]] || mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(_escp_hosts)
    fi
    # bash replaces only the part of the word after its last ':' or '=' (COMP_WORDBREAKS)
    local cut=${cur%"${cur##*[:=]}"}
    if [[ -n $cut && $COMP_WORDBREAKS == *[:=]* ]]; then
        local quoted
        quoted=$(printf '%q' "$cut")
        COMPREPLY=("${COMPREPLY[@]#"$quoted"}")
    fi
}
complete -o nospace -F _escp escp
"""

ZSH_TEMPLATE = r"""#compdef escp
# zsh completion for escp (escp @VERSION@), generated by `escp --completion zsh`.
# Install: escp --completion zsh > ~/.zfunc/_escp, with fpath=(~/.zfunc $fpath) before compinit.
# Hosts and remote paths come from zsh's own _ssh_hosts and _remote_files (which passes the
# line's -F, -P, -4 and -6 on to ssh).

_escp_paths() {
  local -a sshopts
  local i expl
  for ((i = 2; i < CURRENT; i++)); do
    case $words[i] in
      -F) sshopts+=(-F $words[i+1]) ;;
      -P) sshopts+=(-p $words[i+1]) ;;
      -4|-6) sshopts+=($words[i]) ;;
    esac
  done
  if compset -P 1 '*:'; then
    _remote_files -- ssh $sshopts
  elif compset -P 1 '*@'; then
    _wanted hosts expl host _ssh_hosts -S:
  else
    _alternative 'files:file:_files' 'hosts:host:_ssh_hosts -S:'
  fi
}

_arguments -s -S \
    @SPECS@ \
    '*:path:_escp_paths'
"""
