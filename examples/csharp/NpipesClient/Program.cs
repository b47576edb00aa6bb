// An npipes client in C#, from docs/protocol.md (frame format v1); the frame code is in
// ../Shared/Npipes.cs.
//
//   NpipesClient [--no-crc] [--bad-crc] NAME MESSAGE...
//       sends each MESSAGE ("hex:0001ff" is binary, anything else text) and prints each
//       reply on a line (binary as "hex:..."). Frames carry a CRC-32 and replies must
//       (npipes' crc=True) unless --no-crc; --bad-crc sends wrong CRCs (a demonstration).
//   NpipesClient [--no-crc] NAME --binary-size N
//       one N-byte binary message (byte i = i % 251); checks the reply byte for byte.
//
// NAME: the .NET pipe name ("demo"; \\.\pipe\demo on Windows). On Linux/macOS .NET
// makes it the socket $TMPDIR/CoreFxPipe_demo: the npipes side uses dotnet=True.
using System;
using System.IO;
using System.Linq;
using System.Collections.Generic;

static class Program
{
    static int Main(string[] argv)
    {
        var args = new List<string>(argv);
        bool crc = !args.Remove("--no-crc");
        bool badCrc = args.Remove("--bad-crc");
        if (args.Count < 2 || (args[1] == "--binary-size" && args.Count != 3))
        {
            Console.Error.WriteLine("usage: NpipesClient [--no-crc] [--bad-crc] NAME MESSAGE...\n"
                + "       NpipesClient [--no-crc] NAME --binary-size N");
            return 2;
        }
        try
        {
            using (var pipe = Pipes.Connect(args[0], 30000))
            using (var stdout = Console.OpenStandardOutput())
            {
                if (args[1] == "--binary-size")
                {
                    var data = new byte[int.Parse(args[2])];
                    for (int i = 0; i < data.Length; i++) data[i] = (byte)(i % 251);
                    NpFrame.Send(pipe, data, crc);
                    var echo = NpFrame.Receive(pipe, crc) as byte[];
                    if (echo == null || !echo.SequenceEqual(data))
                    {
                        Console.Error.WriteLine("NpipesClient: the reply differs from what was sent");
                        return 1;
                    }
                    Pipes.PrintLine(stdout, "ok: " + data.Length + " bytes");
                    return 0;
                }
                foreach (string arg in args.Skip(1))
                {
                    NpFrame.Send(pipe, Pipes.ParseMessage(arg), crc, badCrc);
                    Pipes.PrintLine(stdout, Pipes.Show(NpFrame.Receive(pipe, crc)));
                }
                return 0;
            }
        }
        catch (Exception e) when (e is IOException || e is TimeoutException || e is UnauthorizedAccessException
            || e is ArgumentException || e is FormatException)
        {
            Console.Error.WriteLine("NpipesClient: " + e.Message);
            return 1;
        }
    }
}
